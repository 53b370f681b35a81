"""A trigram index for the admin's filename search, on PostgreSQL only.

Django's `icontains` is `UPPER(filename::text) LIKE UPPER('%term%')`, which no
B-tree index can serve; pg_trgm's GIN index can. SQLite (the embedded stack)
has nothing like it and does not need it.
"""

from django.db import migrations


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(
        "CREATE INDEX IF NOT EXISTS upload_filename_trgm "
        "ON uploads_upload USING gin ((UPPER(filename::text)) gin_trgm_ops)"
    )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS upload_filename_trgm")


class Migration(migrations.Migration):
    dependencies = [("uploads", "0002_type_index")]

    operations = [migrations.RunPython(create, drop)]
