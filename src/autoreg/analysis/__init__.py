"""Analysis of trained models and sweeps: `events` (reading TensorBoard runs), `report` (sweep
reports: tables and plots), `receptive_field` (which inputs a prediction depends on)."""
