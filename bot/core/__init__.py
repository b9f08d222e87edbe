"""Pure protocol cores shared by several features: no I/O, no clock, no event loop."""
