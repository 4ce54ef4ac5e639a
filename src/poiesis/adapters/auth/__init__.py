"""Authenticators: OIDC bearer tokens and basic auth against a users file."""
