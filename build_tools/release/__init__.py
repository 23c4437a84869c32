"""Releasing from several machines: job lists, gathering image sets, merging wheels, indexes, the rehearsal."""
