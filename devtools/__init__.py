"""Development tooling the runtime never imports: the synthetic archive for tests and the demo."""
