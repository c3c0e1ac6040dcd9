"""What runs inside the user's Jupyter server, on the site: the server extension (its port report
to the hub, /workbench/job), the job's view of itself, the job panel, Dask presets and the Dask
tab's listing, the reverse tunnel, the pinned hub CA, the starter-notebook copy. The job loads the
server extension through jupyterhub-singleuser's --ServerApp.jpserver_extensions (spawners.script)."""
