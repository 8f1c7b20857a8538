package integration

import "testing"

func load(t *testing.T, cfg reliabilityConfig, c *tally)         {}
func security(t *testing.T, cfg reliabilityConfig, c *tally)     {}
