import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('auth', '0012_alter_user_first_name_max_length'),
        ('ingestion', '0002_document_chunking'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='document',
            name='uploaded_by',
            field=models.ForeignKey(blank=True, help_text='Who uploaded it; empty for the system.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='documents_uploaded', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='source',
            name='editor_groups',
            field=models.ManyToManyField(blank=True, help_text='Groups whose members may replace or delete any document of the source, not only their own (they must also be able to see it).', related_name='sources_edited', to='auth.group'),
        ),
    ]
