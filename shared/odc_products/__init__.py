"""eo3 product definitions, one YAML file each: the input products (the archive's scenes and
the ARD pool's outputs) and the water classification products made from them."""
