"""python -m stress: the rmapstress command line."""

from stress.cli import entry

entry()
