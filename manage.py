#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    from config.env import SettingsError

    try:
        execute_from_command_line(sys.argv)
    except SettingsError as error:
        # A missing or malformed variable is the operator's to fix, and the message says how: a
        # traceback would only bury it.
        print(error, file=sys.stderr)
        sys.exit(2)
