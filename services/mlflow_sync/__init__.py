"""The MLflow mirror: training runs, registered versions and aliases, logged to an MLflow server alongside the loop."""
