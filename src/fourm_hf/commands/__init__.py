"""The ``fourm-hf`` subcommands, one module each (the top layer of the package).

Every module defines ``add_arguments(parser)`` and ``main(args) -> int`` and does only the command-line
part: it reads the arguments, calls library functions and prints. ``fourm_hf.cli`` imports a module only
when its subcommand runs (so ``fourm-hf --help`` does not import the commands), and ``cli.run_command``
turns an expected error (``ValueError``, ``TypeError``, a full disk, ...) into one line on stderr and exit
status 2. Library modules define no ``main()``.
"""
