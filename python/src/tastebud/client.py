"""A client of ``tastebud serve``, named after the service's SDK calls where they fit
(personalize-runtime's get_recommendations and get_personalized_ranking, personalize-events'
put_events, put_users and put_items). Standard library only: it runs wherever the package does.

    client = tastebud.Client("http://127.0.0.1:8080")
    client.recommend(user_id="u1", num_results=10)          # [{"itemId": ..., "score": ...}, ...]
    client.put_events(session_id="s1", user_id="u1",
                      event_list=[{"eventType": "purchase", "itemId": "i3", "sentAt": 1700000000}])
"""

import json
import urllib.error
import urllib.request

from ._api import Error


class Client:
    def __init__(self, url="http://127.0.0.1:8080", api_key=None, timeout=10.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("X-Api-Key", self.api_key)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as e:  # the server's message names the field
            text = e.read().decode(errors="replace")
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text or e.reason
            raise Error(f"{method} {path}: {e.code}: {message}") from None
        return text if path == "/metrics" else json.loads(text)

    @staticmethod
    def _request(**fields):
        return {k: v for k, v in fields.items() if v is not None}

    def get_recommendations(self, userId=None, itemId=None, numResults=None, filter=None,
                            filterValues=None, context=None, recommenderArn=None):
        """The service's GetRecommendations: the whole answer (itemList, recommendationId).
        recommenderArn: the use case, on a server started with --recommenders."""
        return self._call("POST", "/recommendations", self._request(
            userId=userId, itemId=itemId, numResults=numResults, filter=filter, filterValues=filterValues,
            context=context, recommenderArn=recommenderArn))

    def recommend(self, user_id=None, item_id=None, num_results=None, filter=None, filter_values=None,
                  context=None, recommender=None):
        """The itemList of get_recommendations (recommender: the use case's name or ARN)."""
        return self.get_recommendations(user_id, item_id, num_results, filter, filter_values, context,
                                        recommender)["itemList"]

    def get_personalized_ranking(self, userId, inputList, filter=None, filterValues=None, context=None,
                                 recommenderArn=None):
        """The service's GetPersonalizedRanking: personalizedRanking, recommendationId."""
        return self._call("POST", "/personalized-ranking", self._request(
            userId=userId, inputList=list(inputList), filter=filter, filterValues=filterValues, context=context,
            recommenderArn=recommenderArn))

    def rank(self, user_id, items, filter=None, filter_values=None, context=None, recommender=None):
        """The personalizedRanking of get_personalized_ranking."""
        return self.get_personalized_ranking(user_id, items, filter, filter_values, context,
                                             recommender)["personalizedRanking"]

    def put_events(self, session_id=None, event_list=(), user_id=None, sessionId=None, eventList=None,
                   userId=None, trackingId=None):
        """The service's PutEvents (its own names work too); returns once the events are on disk."""
        body = self._request(trackingId=trackingId, sessionId=sessionId or session_id,
                             userId=userId or user_id, eventList=list(eventList if eventList is not None else event_list))
        self._call("POST", "/events", body)

    def put_users(self, users):
        """The service's PutUsers: [{"userId": ..., "properties": {...} or its JSON text}], 1 to 10."""
        self._call("POST", "/users", {"users": list(users)})

    def put_items(self, items):
        """The service's PutItems: [{"itemId": ..., "properties": {...} or its JSON text}], 1 to 10."""
        self._call("POST", "/items", {"items": list(items)})

    def health(self):
        return self._call("GET", "/health")

    def metrics(self):
        return self._call("GET", "/metrics")
