"""eo3 product definitions of the archive's four products, one YAML file each."""
