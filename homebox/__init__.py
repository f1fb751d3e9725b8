"""homebox host tools: one console command with subcommands per role."""
