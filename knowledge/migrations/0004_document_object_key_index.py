from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("knowledge", "0003_knowledgebase_language"),
    ]

    operations = [
        migrations.AlterField(
            model_name="document",
            name="object_key",
            field=models.CharField(blank=True, db_index=True, default="", max_length=200),
        ),
    ]
