"""api2convert-compatible audio conversion service: the HTTP side."""
