"""Building blocks, one module each, imported from where they live so that a network reads in only
its own layers: masked convolutions (masked), recurrent cells and layers (recurrent), skew/unskew
(skew), PixelCNN++'s shifted convolutions (shifted), class conditioning (conditioning), CPU batch
chunks (chunks)."""
