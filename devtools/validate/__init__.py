"""Independent checks of the products: references that share no code with them (`references`),
and `python -m devtools.validate`, which reruns them on a product's outputs and the scene files
they were made from and prints, per product and band, the largest difference."""
