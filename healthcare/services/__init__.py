"""Domain services: business rules over the stores; they raise domain errors, never HTTP ones."""
