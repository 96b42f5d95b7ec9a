"""The `conveyor` command line and the demo: above every service, used by people."""
