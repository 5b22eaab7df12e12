"""Speed and cost benchmarks; each prints ratios against a reference measured in the same run."""


def require_bench_extra(module: str):
    """Imports an optional benchmark dependency, or exits with the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise SystemExit(
            f"this benchmark needs {module!r} ({error}); install the bench extra: "
            'pip install -e ".[bench]"'
        ) from error
