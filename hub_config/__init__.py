"""Hub configuration: settings, pre-flight checks, batch-script templates and the hub config file."""
