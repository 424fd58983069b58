"""Support-team diagnostics: endpoint checks, redaction, the support bundle, versions (no Qt)."""
