"""The one thing pyproject.toml cannot say: the optional C sampler.

``optional=True``: where no C compiler or Python headers are found, the agent
installs without it and samples with its Python collectors (the same values,
at about twice the CPU; see docs/agent.md, "Resource use")."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("beeyard.agent.collectors._native",
              ["src/beeyard/agent/collectors/_native.c"],
              optional=True, extra_compile_args=["-O2"]),
])
