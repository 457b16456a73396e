"""Package discovery: every miras_search.* package, plus the top-level kernels/ folder, which is
installed as miras_search.kernels (the metadata lives in pyproject.toml). In a checkout,
miras_search/kernels/__init__.py loads that folder under the same name; it is not installed."""

from setuptools import find_packages, setup

packages = find_packages(include=["miras_search", "miras_search.*"], exclude=["miras_search.kernels"])
kernel_packages = [f"miras_search.{name}" for name in find_packages(include=["kernels", "kernels.*"])]

setup(
    packages=packages + kernel_packages,
    package_dir={"miras_search.kernels": "kernels"},
    package_data={"miras_search": ["py.typed"]},
)
