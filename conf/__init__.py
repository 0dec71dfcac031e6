"""The Hydra config tree. src/autoreg/conf links here, so the package carries it as `autoreg.conf` and an installed command finds it (autoreg.apps)."""
