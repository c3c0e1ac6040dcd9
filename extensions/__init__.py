"""What runs inside the user's Jupyter server: job panel, walltime guard, Dask presets.

Nothing here yet beyond the package itself; the job runs plain `jupyterhub-singleuser`.
"""
