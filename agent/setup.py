"""The one thing pyproject.toml cannot say: the agent's two optional C modules, the
per-second sampler and the WebSocket frame encoder.

``optional=True``: where no C compiler or Python headers are found, the agent
installs without them and uses its Python code for both (the same values and
bytes, at more CPU; see docs/agent.md, "Resource use")."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("beeyard.agent.collectors._native", ["src/beeyard/agent/collectors/_native.c"],
              depends=["src/beeyard/agent/frame.h"], optional=True,
              extra_compile_args=["-O2"]),
    Extension("beeyard.agent._frame", ["src/beeyard/agent/_frame.c"],
              depends=["src/beeyard/agent/frame.h"], optional=True,
              extra_compile_args=["-O2"]),
])
