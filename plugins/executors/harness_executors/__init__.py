"""Built-in executors: local (every job in this process) and ray (jobs as Ray tasks over a node or a cluster; the `ray` extra)."""
