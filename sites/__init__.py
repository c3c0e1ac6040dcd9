"""Site control: how the hub reaches each site's Slurm (job control and its runners, typed
failures). Imports nothing of JupyterHub: the job side uses its Slurm command line too."""
