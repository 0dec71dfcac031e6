"""The families' networks: pure nn.Modules mapping an image batch (+ label) to likelihood
parameters, one file per family. Each is declared (its keys, defaults and checks, torch-free) in
autoreg.families, which builds it."""
