"""The processes of Poiesis (API, CLI) and their composition roots."""
