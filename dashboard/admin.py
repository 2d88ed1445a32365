"""Freshet's name on the admin site (templates/admin/base_site.html draws the header)."""

from django.contrib import admin

admin.site.site_header = "Freshet"
admin.site.site_title = "Freshet"
admin.site.index_title = "Operations"
admin.site.site_url = "/chat/"
# The apps are on the index page; without the sidebar a list page has the window's whole width
# for its columns (the lists are made to fit 1280 px).
admin.site.enable_nav_sidebar = False
