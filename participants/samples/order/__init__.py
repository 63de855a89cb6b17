"""The order fulfillment sample: its saga module, four workers, CLI plug-in, HTTP route and demo."""
