from django.db import migrations, models


def drop_documents_marked_deleted(apps, schema_editor):
    """Rows with the retired status "deleted" go; the orphan sweep removes their chunks."""
    apps.get_model("knowledge", "Document").objects.filter(status="deleted").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("knowledge", "0004_document_object_key_index"),
    ]

    operations = [
        migrations.RunPython(drop_documents_marked_deleted, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="document",
            name="status",
            field=models.CharField(
                choices=[("pending", "Pending"), ("indexed", "Indexed"), ("failed", "Failed")],
                db_index=True, default="pending", max_length=16,
            ),
        ),
    ]
