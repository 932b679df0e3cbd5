"""Storage back ends behind domain interfaces (patients: PostgreSQL or DynamoDB, chosen by settings)."""
