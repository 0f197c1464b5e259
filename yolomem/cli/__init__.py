"""The command line: ``main`` parses, one module per subcommand (``COMMAND_MODULES``) does the work."""
