"""(to be written)"""

from beeyard.server.http.routing import Route

ROUTES: list[Route] = []
