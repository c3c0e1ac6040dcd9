"""A card per session on the hub's pages: /hub/sessions, and the card the home and waiting pages show
(pages, templates/)."""
