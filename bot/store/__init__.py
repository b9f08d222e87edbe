"""The database: schema, migrations, and the one store interface every feature uses."""
