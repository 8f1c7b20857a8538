package integration

import "testing"

func hostileInput(t *testing.T, cfg reliabilityConfig, c *tally) {}
func load(t *testing.T, cfg reliabilityConfig, c *tally)         {}
func security(t *testing.T, cfg reliabilityConfig, c *tally)     {}
