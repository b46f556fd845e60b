import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ingestion", "0001_initial"),
        ("knowledge", "0003_knowledgebase_language"),
    ]

    operations = [
        migrations.AlterField(
            model_name="ingestionjob",
            name="kb",
            field=models.ForeignKey(
                blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="jobs",
                to="knowledge.knowledgebase",
            ),
        ),
        migrations.AlterField(
            model_name="ingestionjob",
            name="kind",
            field=models.CharField(
                choices=[
                    ("sync", "Sync a source"), ("delete_documents", "Delete documents"),
                    ("delete_source", "Delete a source"), ("delete_knowledge_base", "Delete a knowledge base"),
                ],
                default="sync", max_length=32,
            ),
        ),
    ]
