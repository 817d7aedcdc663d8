"""peft-adaptir: AdaptIR as a peft method. Importing this package registers the method with peft."""
