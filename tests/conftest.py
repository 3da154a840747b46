"""Test-wide settings."""

from hypothesis import settings

# Speed is measured by benchmarks/, never by tests: on the shared 2-core machine hypothesis's
# default 200 ms deadline failed correct tests whenever other jobs were running.
settings.register_profile("sop-dse", deadline=None)
settings.load_profile("sop-dse")
