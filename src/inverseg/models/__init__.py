"""Generators and discriminators: pure nn.Modules with explicit constructor arguments, one model per file."""
