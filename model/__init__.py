"""The model: the site catalogue, the hub's settings and the rules of a job request. Pure data
and validation; imports nothing of JupyterHub, of site control or of the spawner, so the hub,
its command line and the code inside a job on any site share it, and the idioms every layer
uses once: atomic writes (files), YAML with located errors (yaml_files), TTL caches (ttl_cache)."""
