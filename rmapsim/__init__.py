"""rmapsim: the 2.6.34 anonymous reverse map, every variant of the April 2010 thread."""
