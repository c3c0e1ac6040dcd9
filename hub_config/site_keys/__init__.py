"""Each user's SSH key for each remote site: the hub's encrypted store (store) and the page that shows
the public key and tests the connection (page, templates/)."""
