"""The psi engine: pressure-feedback proactive reclaim of memory cgroups."""
