"""pytest plugin for policy authors (registered through the ``pytest11`` entry point).

Fixtures are added here by the SDK work (issue 9); the module must exist so pytest can load it.
"""
