"""The base every floor stands on: settings, tables, schemas, db, clients, stores; imports nothing above."""
