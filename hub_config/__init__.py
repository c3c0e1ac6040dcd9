"""The hub: its config file, the one runtime it hands its parts, its pages and their handlers, the admin CLI."""
