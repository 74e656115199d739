"""One typed Settings table for the dashboard, read once in main() or create_app()."""

from nixfleet.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
