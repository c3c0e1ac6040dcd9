"""The workbench's Slurm spawner and the pure pieces it is built from."""
