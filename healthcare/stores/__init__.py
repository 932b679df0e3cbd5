"""Storage back ends behind domain interfaces (patients: PostgreSQL or DynamoDB). Part of the base."""
