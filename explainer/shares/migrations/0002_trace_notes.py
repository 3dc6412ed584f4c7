from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("shares", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="trace",
            name="notes",
            field=models.JSONField(blank=True, default=list, help_text="what was changed or left out to store this trace, and why"),
        ),
    ]
